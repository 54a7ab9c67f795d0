#!/usr/bin/env node
// mailcfg: see man/mailcfg.*; the program is bundled into dist/ by `make`.
require('../dist/mailcfg.js');
