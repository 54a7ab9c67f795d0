#!/usr/bin/env node
// fetch: see man/fetch.*; the program is bundled into dist/ by `make`.
require('../dist/fetch.js');
