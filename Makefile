# libdatastore — build, test, install.
#
#   make                 libdatastore.so / .a and ds-migrate
#   make check           bootstrap packages, start local services, run every test
#                        (and scripts/check-docs: docs that cannot drift)
#   make check-asan      the test suites under AddressSanitizer + UBSan
#   make check-abi       the ABI against abi/libdatastore.abi (docs/abi.md)
#   make check-drills    failover drill (HA profile) and point-in-time recovery drill
#   make demo            bootstrap, start local services, migrate, run the examples
#   make bench-run       run the benchmarks against local services
#   make fuzz            build the libFuzzer targets (clang) and run each for
#                        FUZZ_SECONDS (default 60)
#   make install         PREFIX=/usr/local DESTDIR=
#   make WERROR=1 ...    warnings as errors (CI); examples always use -Werror
#
# Respects CC, CFLAGS, CPPFLAGS, LDFLAGS, PREFIX, DESTDIR; our own flags are
# kept apart so a caller's CFLAGS never drops -fvisibility or -std.

SHELL := /bin/bash
.DEFAULT_GOAL := all

HEADER := include/datastore/core.h
version_part = $(shell sed -n 's/^\#define DS_VERSION_$(1) \([0-9]*\)$$/\1/p' $(HEADER))
VERSION_MAJOR := $(call version_part,MAJOR)
VERSION_MINOR := $(call version_part,MINOR)
VERSION_PATCH := $(call version_part,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR ?= $(PREFIX)/bin
DESTDIR ?=

CC ?= cc
CFLAGS ?= -O2 -g
PKG_CONFIG ?= pkg-config
BUILD ?= build

DEPS := libpq hiredis jansson libsodium openssl
DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(DEPS) 2>/dev/null)
# -lm: the vector arithmetic of the memory store (sqrt, lrintf, nextafterf)
DEP_LIBS := $(shell $(PKG_CONFIG) --libs $(DEPS) 2>/dev/null) -lm
CHECK_CFLAGS := $(shell $(PKG_CONFIG) --cflags check 2>/dev/null)
CHECK_LIBS := $(shell $(PKG_CONFIG) --libs check 2>/dev/null)
JANSSON_CFLAGS := $(shell $(PKG_CONFIG) --cflags jansson 2>/dev/null)
JANSSON_LIBS := $(shell $(PKG_CONFIG) --libs jansson 2>/dev/null)

ifeq ($(SANITIZE),1)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
# Library objects instrumented for libFuzzer (clang only; see `make fuzz`).
ifeq ($(SANITIZE),fuzz)
SAN_FLAGS := -fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer \
             -fno-sanitize-recover=undefined
endif

DS_STD := -std=c11 -D_DEFAULT_SOURCE
DS_WARN := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wpointer-arith \
           -Wformat -Wformat-security -Wvla
# Warnings are errors only on request (`make WERROR=1`, as CI builds): a
# newer distro compiler's new warning must not break a release build. The
# examples are always built with -Werror: they are our documentation.
WERROR ?= 0
ifeq ($(WERROR),1)
DS_WARN += -Werror
endif
DS_CFLAGS := $(DS_STD) $(DS_WARN) -pthread -Iinclude -Isrc -I$(BUILD)/gen $(SAN_FLAGS)
LIB_CFLAGS := $(DS_CFLAGS) -fPIC -fvisibility=hidden -DDS_BUILDING_LIBRARY $(DEP_CFLAGS)

# ---- sources --------------------------------------------------------------
LIB_SRCS := $(filter-out src/cli/%,$(wildcard src/*/*.c))
# Generated sources (embedded migrations) register themselves here.
MIGRATION_FILES := $(sort $(wildcard sql/*.sql))
GEN_SRCS := $(BUILD)/gen/migrations.c

LIB_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(LIB_SRCS) $(GEN_SRCS))
SONAME := libdatastore.so.$(VERSION_MAJOR)
SHLIB := $(BUILD)/lib/libdatastore.so.$(VERSION)
STLIB := $(BUILD)/lib/libdatastore.a
LIB_LDFLAGS := -shared -Wl,-soname,$(SONAME) -Wl,--version-script=src/libdatastore.map \
               -Wl,--no-undefined -Wl,-z,relro -Wl,-z,now

CLI_SRCS := $(wildcard src/cli/*.c)
CLI_BINS := $(patsubst src/cli/%.c,$(BUILD)/bin/%,$(CLI_SRCS))

TEST_SRCS := $(wildcard tests/*.c)
TEST_SUITES := $(patsubst tests/check_%.c,%,$(wildcard tests/check_*.c))
TEST_OBJS := $(patsubst %.c,$(BUILD)/obj/%.o,$(TEST_SRCS))
TEST_BIN := $(BUILD)/tests/ds-tests

EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILD)/examples/%,$(EXAMPLE_SRCS))

BENCH_SRCS := $(wildcard bench/bench_*.c)
BENCH_UTIL := $(filter-out $(BENCH_SRCS),$(wildcard bench/*.c))
BENCH_BINS := $(patsubst bench/%.c,$(BUILD)/bench/%,$(BENCH_SRCS))

USE_SHARED := -L$(BUILD)/lib -ldatastore -Wl,-rpath,$(abspath $(BUILD)/lib)

.PHONY: all lib examples tests bench check check-asan check-clang demo bench-run bench-anchors \
        install uninstall clean services-start services-stop fuzz fuzz-run \
        check-abi abi-baseline \
        drills check-drills ha-compare
all: lib $(CLI_BINS)
lib: $(SHLIB) $(STLIB) $(BUILD)/lib/libdatastore.so

# ---- library --------------------------------------------------------------
$(BUILD)/obj/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/obj/$(BUILD)/gen/%.o: $(BUILD)/gen/%.c
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(LIB_CFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

# sql/*.sql byte for byte into the library. Depending on the directory too
# catches a file added or removed (the wildcard alone misses a removal).
$(BUILD)/gen/migrations.c: $(MIGRATION_FILES) sql scripts/embed-sql
	@mkdir -p $(@D)
	./scripts/embed-sql $@ $(MIGRATION_FILES)

$(SHLIB): $(LIB_OBJS) src/libdatastore.map
	@mkdir -p $(@D)
	$(CC) $(SAN_FLAGS) $(LIB_LDFLAGS) $(LDFLAGS) -o $@ $(LIB_OBJS) $(DEP_LIBS) -pthread

$(BUILD)/lib/libdatastore.so: $(SHLIB)
	ln -sf $(notdir $(SHLIB)) $(BUILD)/lib/$(SONAME)
	ln -sf $(SONAME) $@

$(STLIB): $(LIB_OBJS)
	@mkdir -p $(@D)
	rm -f $@
	$(AR) rcs $@ $^

$(BUILD)/bin/%: src/cli/%.c $(BUILD)/lib/libdatastore.so
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DS_CFLAGS) $(JANSSON_CFLAGS) $(CFLAGS) -o $@ $< \
	    $(USE_SHARED) $(JANSSON_LIBS) $(LDFLAGS)

# ---- tests: one Check runner over every tests/check_<module>.c ------------
$(BUILD)/gen/test_suites.h: $(wildcard tests/check_*.c) Makefile
	@mkdir -p $(@D)
	@{ echo '/* generated from tests/check_*.c */'; \
	   for s in $(TEST_SUITES); do echo "Suite *ds_test_$${s}_suite(void);"; done; \
	   echo '#define DS_TEST_SUITES \'; \
	   for s in $(TEST_SUITES); do echo "    X(ds_test_$${s}_suite) \\"; done; \
	   echo; } > $@.tmp && mv $@.tmp $@

$(BUILD)/obj/tests/%.o: tests/%.c $(BUILD)/gen/test_suites.h
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DS_CFLAGS) $(DEP_CFLAGS) $(CHECK_CFLAGS) $(CFLAGS) -MMD -MP -c $< -o $@

$(TEST_BIN): $(TEST_OBJS) $(STLIB)
	@mkdir -p $(@D)
	$(CC) $(SAN_FLAGS) -o $@ $(TEST_OBJS) $(STLIB) $(DEP_LIBS) $(CHECK_LIBS) -pthread $(LDFLAGS)

tests: $(TEST_BIN) lib $(CLI_BINS) drills

# ---- drills: the load programs of scripts/*-drill (make check-drills) ------
DRILL_SRCS := $(wildcard tests/drill/*.c)
DRILL_BINS := $(patsubst tests/drill/%.c,$(BUILD)/tests/%-drill,$(DRILL_SRCS))

$(BUILD)/tests/%-drill: tests/drill/%.c $(BUILD)/lib/libdatastore.so
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DS_STD) $(DS_WARN) -Iinclude $(JANSSON_CFLAGS) $(SAN_FLAGS) $(CFLAGS) \
	    -pthread -o $@ $< $(USE_SHARED) $(JANSSON_LIBS) $(LDFLAGS)

drills: $(DRILL_BINS)

# ---- examples: documentation that compiles (only <datastore/datastore.h>) --
$(BUILD)/examples/%: examples/%.c $(BUILD)/lib/libdatastore.so
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DS_STD) $(DS_WARN) -Werror -Iinclude $(JANSSON_CFLAGS) $(SAN_FLAGS) \
	    $(CFLAGS) -o $@ $< $(USE_SHARED) $(JANSSON_LIBS) $(LDFLAGS)

examples: $(EXAMPLE_BINS)

# ---- benchmarks: library path vs raw baseline, see ../shared/BENCH.md -------
$(BUILD)/bench/%: bench/%.c $(BENCH_UTIL) $(wildcard bench/*.h) $(BUILD)/lib/libdatastore.so
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DS_CFLAGS) $(DEP_CFLAGS) $(CFLAGS) -o $@ $< $(BENCH_UTIL) \
	    $(USE_SHARED) $(DEP_LIBS) -lm -pthread $(LDFLAGS)

bench: $(BENCH_BINS)

# Side by side with Drizzle ORM (npm), not part of bench or check.
$(BUILD)/bench/anchors: bench/anchors/anchors.c $(BENCH_UTIL) $(wildcard bench/*.h) $(BUILD)/lib/libdatastore.so
	@mkdir -p $(@D)
	$(CC) $(CPPFLAGS) $(DS_CFLAGS) $(DEP_CFLAGS) $(CFLAGS) -o $@ $< $(BENCH_UTIL) \
	    $(USE_SHARED) $(DEP_LIBS) -lm -pthread $(LDFLAGS)

bench-anchors:
	./scripts/bootstrap
	$(MAKE) all $(BUILD)/bench/anchors
	./scripts/bench-anchors --build $(BUILD)

# ---- the two commands of the README ----------------------------------------
check:
	./scripts/bootstrap
	$(MAKE) all tests examples bench
	$(MAKE) check-clang
	./scripts/check-docs
	$(BUILD)/bin/ds-migrate --dir sql lint
	./scripts/run-tests --build $(BUILD)

check-asan:
	./scripts/bootstrap
	$(MAKE) BUILD=build/asan SANITIZE=1 CFLAGS="-O1 -g" tests examples
	./scripts/run-tests --build build/asan --asan

# Operations drills on real engines, a few minutes in all: failover on the
# HA profile (pg_auto_failover), and point-in-time recovery with pgBackRest.
check-drills:
	./scripts/bootstrap
	$(MAKE) all drills
	./scripts/failover-drill --build $(BUILD)
	./scripts/pitr-drill --build $(BUILD)

# pg_auto_failover (the HA profile) against Patroni + etcd: the failover
# drill on each, interleaved, HA_COMPARE_RUNS times (3); BENCH lines with
# the medians. About 10 minutes; not part of CI (docs/operations.md).
ha-compare:
	./scripts/bootstrap --ha-patroni
	$(MAKE) all drills
	./scripts/ha-compare --build $(BUILD)

# The library must also compile warning-free with clang.
check-clang:
	$(MAKE) BUILD=build/clang CC=clang lib

# The ABI against the committed baseline (libabigail; docs/abi.md). Its own
# build, with debug information whatever CFLAGS the caller uses.
check-abi:
	$(MAKE) BUILD=build/abi CFLAGS="-O2 -g" SANITIZE= lib
	./scripts/check-abi --build build/abi

# Rewrites abi/libdatastore.abi: only deliberately, see docs/abi.md.
abi-baseline:
	$(MAKE) BUILD=build/abi CFLAGS="-O2 -g" SANITIZE= lib
	./scripts/check-abi --build build/abi --update

demo:
	./scripts/bootstrap
	$(MAKE) all examples
	./scripts/demo --build $(BUILD)

bench-run:
	./scripts/bootstrap
	$(MAKE) all bench
	./scripts/bench-run --build $(BUILD)

# ---- fuzzing: libFuzzer + ASan/UBSan, each target a bounded time ------------
# `make fuzz` rebuilds the library instrumented (clang, SANITIZE=fuzz) under
# build/fuzz and runs every fuzz/fuzz_<name>.c for FUZZ_SECONDS, keeping the
# corpus it grows in build/fuzz/corpus/<name> (seeds: fuzz/corpus/<name>).
# One target: make fuzz FUZZ_TARGETS=config. A failure leaves its input in
# build/fuzz/artifacts/; replay it with build/fuzz/fuzz/fuzz_<name> FILE.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))
FUZZ_SRCS := $(patsubst %,fuzz/fuzz_%.c,$(FUZZ_TARGETS))
FUZZ_BINS := $(patsubst fuzz/%.c,$(BUILD)/fuzz/%,$(FUZZ_SRCS))

fuzz:
	$(MAKE) BUILD=build/fuzz CC=clang SANITIZE=fuzz CFLAGS="-O1 -g" fuzz-run

$(BUILD)/fuzz/%: fuzz/%.c $(STLIB)
	@mkdir -p $(@D)
	clang $(CPPFLAGS) $(DS_STD) $(DS_WARN) -Iinclude -Isrc $(DEP_CFLAGS) -g -O1 \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
	    -o $@ $< $(STLIB) $(DEP_LIBS) -pthread

fuzz-run: $(FUZZ_BINS)
	@test "$(SANITIZE)" = fuzz || { echo "fuzz-run: use make fuzz"; exit 1; }
	@for bin in $(FUZZ_BINS); do \
	    name=$$(basename $$bin); name=$${name#fuzz_}; \
	    mkdir -p $(BUILD)/corpus/$$name $(BUILD)/artifacts; \
	    echo "fuzz: $$name for $(FUZZ_SECONDS) s"; \
	    $$bin -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 \
	        -artifact_prefix=$(BUILD)/artifacts/$$name- \
	        $(BUILD)/corpus/$$name fuzz/corpus/$$name || exit 1; \
	done

services-start:
	./scripts/services start
services-stop:
	./scripts/services stop

# ---- install -----------------------------------------------------------------
install: all
	install -d $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(INCLUDEDIR)/datastore $(DESTDIR)$(BINDIR)
	install -m 644 include/datastore/*.h $(DESTDIR)$(INCLUDEDIR)/datastore/
	install -m 755 $(SHLIB) $(DESTDIR)$(LIBDIR)/
	ln -sf $(notdir $(SHLIB)) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libdatastore.so
	install -m 644 $(STLIB) $(DESTDIR)$(LIBDIR)/
	$(if $(CLI_BINS),install -m 755 $(CLI_BINS) $(DESTDIR)$(BINDIR)/)
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' \
	    pkgconfig/datastore.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/datastore.pc

uninstall:
	rm -rf $(DESTDIR)$(INCLUDEDIR)/datastore
	rm -f $(DESTDIR)$(LIBDIR)/libdatastore.* $(DESTDIR)$(LIBDIR)/pkgconfig/datastore.pc
	rm -f $(patsubst $(BUILD)/bin/%,$(DESTDIR)$(BINDIR)/%,$(CLI_BINS))

clean:
	rm -rf build

-include $(LIB_OBJS:.o=.d) $(TEST_OBJS:.o=.d)
