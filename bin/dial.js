#!/usr/bin/env node
// dial: see man/dial.*; the program is bundled into dist/ by `make`.
require('../dist/dial.js');
