#!/usr/bin/env -S node --max-semi-space-size=1
// pop3d: see man/pop3d.8; the program is bundled into dist/ by `make`.
// A 1 MB young generation: socket read buffers of a long DATA/RETR are freed as they go, so a
// 100 MB message stays within the memory goal (bench/RESULTS.md).
require('../dist/pop3d.js');
