#!/usr/bin/env node
// queue-run: see man/queue-run.*; the program is bundled into dist/ by `make`.
require('../dist/queue-run.js');
