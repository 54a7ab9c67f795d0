#!/usr/bin/env node
// pop3d: see man/pop3d.8; the program is bundled into dist/ by `make`.
require('../dist/pop3d.js');
