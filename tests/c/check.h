/* A tiny test harness for the C tests: CHECK(cond) and a closing report. */
#ifndef KEYWARD_TEST_CHECK_H
#define KEYWARD_TEST_CHECK_H

#include <stdio.h>
#include <string.h>

#include "keyward.h"

static int checks_passed = 0;
static int checks_failed = 0;

static const char *last_error(void) {
    static char buf[512];
    kw_last_error_message(buf, sizeof buf);
    return buf;
}

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (cond) {                                                                  \
            checks_passed++;                                                         \
        } else {                                                                     \
            checks_failed++;                                                         \
            fprintf(stderr, "%s:%d: CHECK(%s) failed (last error: %s)\n", __FILE__, \
                    __LINE__, #cond, last_error());                                  \
        }                                                                            \
    } while (0)

#define CHECK_STATUS(call, expected) CHECK((call) == (expected))

static int report(void) {
    printf("%d passed, %d failed\n", checks_passed, checks_failed);
    return checks_failed == 0 ? 0 : 1;
}

#endif
