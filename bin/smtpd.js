#!/usr/bin/env node
// smtpd: see man/smtpd.8; the program is bundled into dist/ by `make`.
require('../dist/smtpd.js');
