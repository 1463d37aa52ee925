# keyward's C library: build it, install it, remove it.
#
#   make                                  # the release library (bindings/c)
#   make install PREFIX=/usr/local        # and DESTDIR=... for a staged install
#   make uninstall PREFIX=/usr/local
#
# Installs lib/libkeyward.so.<ABI>.<minor>.<patch> with its soname link
# libkeyward.so.<ABI> and the link libkeyward.so, lib/libkeyward.a,
# include/keyward.h and lib/pkgconfig/keyward.pc. PROFILE=dev installs the
# unoptimised build (the test script does, to reuse the tests' build).

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
DESTDIR ?=
PROFILE ?= release
CARGO ?= cargo

ROOT := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
TARGET_DIR := $(or $(CARGO_TARGET_DIR),$(ROOT)/target)
BUILD_DIR := $(TARGET_DIR)/$(if $(filter dev,$(PROFILE)),debug,$(PROFILE))
# The one place each number is written: the ABI version in the C crate's
# build script, the release in the workspace's Cargo.toml.
ABI := $(shell sed -n 's/^const ABI_VERSION: u32 = \([0-9]*\);/\1/p' $(ROOT)/bindings/c/build.rs)
VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' $(ROOT)/Cargo.toml)
MINOR_PATCH := $(word 2,$(subst ., ,$(VERSION))).$(word 3,$(subst ., ,$(VERSION)))
REAL := libkeyward.so.$(ABI).$(MINOR_PATCH)

INSTALLED := $(LIBDIR)/$(REAL) $(LIBDIR)/libkeyward.so.$(ABI) $(LIBDIR)/libkeyward.so \
	$(LIBDIR)/libkeyward.a $(INCLUDEDIR)/keyward.h $(LIBDIR)/pkgconfig/keyward.pc

all: library

library:
	$(CARGO) build --manifest-path $(ROOT)/Cargo.toml --profile $(PROFILE) -p keyward-ffi --lib

install: library
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)
	install -m 755 $(BUILD_DIR)/libkeyward_ffi.so $(DESTDIR)$(LIBDIR)/$(REAL)
	ln -sfn $(REAL) $(DESTDIR)$(LIBDIR)/libkeyward.so.$(ABI)
	ln -sfn libkeyward.so.$(ABI) $(DESTDIR)$(LIBDIR)/libkeyward.so
	install -m 644 $(BUILD_DIR)/libkeyward_ffi.a $(DESTDIR)$(LIBDIR)/libkeyward.a
	install -m 644 $(ROOT)/include/keyward.h $(DESTDIR)$(INCLUDEDIR)/keyward.h
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    $(ROOT)/bindings/c/keyward.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/keyward.pc
	chmod 644 $(DESTDIR)$(LIBDIR)/pkgconfig/keyward.pc

uninstall:
	rm -f $(addprefix $(DESTDIR),$(INSTALLED))

.PHONY: all library install uninstall
