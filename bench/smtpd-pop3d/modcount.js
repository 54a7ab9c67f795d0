// modcount.js -- preload (node -r) for startpath.sh: at exit, prints on stderr how many Node
// built-in modules and bindings the program loaded beyond those node had loaded before it.
const before = new Set(process.moduleLoadList);
process.on('exit', () => {
  process.stderr.write(`${process.moduleLoadList.filter((m) => !before.has(m)).length}\n`);
});
