#!/usr/bin/env node
// sendmail: see man/sendmail.*; the program is bundled into dist/ by `make`.
require('../dist/sendmail.js');
