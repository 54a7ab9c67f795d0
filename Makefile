# Outpost — see README.md. `make` builds, `make demo` runs a demo post office in ./demo,
# `make check` runs every test (unit, golden dialogues, interop with real peers).
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR   = $(DESTDIR)$(PREFIX)/lib/outpost
SBINDIR  = $(DESTDIR)$(PREFIX)/sbin
MANDIR   = $(DESTDIR)$(PREFIX)/share/man
PROGRAMS = smtpd pop3d mailcfg fetch queue-run dial sendmail
SOURCES  = $(shell find src test bench -name '*.ts' 2>/dev/null) build.mjs

.PHONY: all build check typecheck test torture demo bench install uninstall clean

all: build

node_modules/.package-lock.json: package.json package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

dist/.built: node_modules/.package-lock.json $(SOURCES)
	node build.mjs

build: dist/.built

typecheck: node_modules/.package-lock.json
	npx tsc --noEmit -p tsconfig.json

test: build
	node --test --test-concurrency=1 dist/test/

check: typecheck test

# The torture suite in full (issue 11; README "Torture"): kills, fuzzing, faults, load, then the
# spool invariant; prints its report table (also in dist/torture-report.md). `make check` runs the
# quick version (the same test file with small counts).
torture: build
	TORTURE_FULL=1 node --test --test-concurrency=1 dist/test/torture/

demo: build
	sh test/demo.sh

bench: build
	sh bench/run.sh

# The directories install makes (a missing one and its missing parents) are listed in
# $(LIBDIR)/.made-dirs, kept across re-installs, so that uninstall removes exactly those, and only
# when empty.
INSTALL_DIRS = $(LIBDIR) $(SBINDIR) $(MANDIR)/man5 $(MANDIR)/man7 $(MANDIR)/man8

install: build
	made=$$(for d in $(INSTALL_DIRS); do while [ ! -d "$$d" ]; do echo "$$d"; d=$$(dirname "$$d"); done; done); \
	  mkdir -p $(INSTALL_DIRS) && \
	  { cat $(LIBDIR)/.made-dirs 2>/dev/null; [ -z "$$made" ] || echo "$$made"; } | sort -u > $(LIBDIR)/.made-dirs.new && \
	  mv $(LIBDIR)/.made-dirs.new $(LIBDIR)/.made-dirs
	cp -R dist bin package.json package-lock.json $(LIBDIR)/
	rm -rf $(LIBDIR)/dist/test
	cd $(LIBDIR) && npm ci --omit=dev --no-audit --no-fund --ignore-scripts=false
	for p in $(PROGRAMS); do ln -sf ../lib/outpost/bin/$$p.js $(SBINDIR)/$$p; done
	for f in man/*.[1-8]; do s=$${f##*.}; cp $$f $(MANDIR)/man$$s/; done

# Removes what install put there: the program links (sendmail only when it is ours), the bundles,
# the man pages, and the directories install made (.made-dirs) that are empty now (rmdir: never
# one holding anything else). mail.cfg (/etc/outpost), the spool and the user stay: see README,
# Uninstalling.
uninstall:
	for p in $(PROGRAMS); do \
	  if [ "$$(readlink $(SBINDIR)/$$p 2>/dev/null)" = ../lib/outpost/bin/$$p.js ]; then rm -f $(SBINDIR)/$$p; fi; \
	done
	for f in man/*.[1-8]; do s=$${f##*.}; rm -f $(MANDIR)/man$$s/$${f##*/}; done
	made=$$(cat $(LIBDIR)/.made-dirs 2>/dev/null); rm -rf $(LIBDIR); \
	  for d in $$(echo "$$made" | sort -r); do rmdir "$$d" 2>/dev/null || true; done

clean:
	rm -rf dist
