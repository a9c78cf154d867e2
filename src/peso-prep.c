/* peso-prep: raw interactions -> <out_dir>/dataset.h5 and stats.json.
 *
 *   peso-prep [--config FILE] [--set key=value ...] [--skip-bad-lines N]
 *             [--print-config]
 *
 * Without --config it prepares the built-in synthetic default. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "prep/prep.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: peso-prep [--config FILE] [--set key=value ...] [--skip-bad-lines N] "
               "[--print-config] [--help-config]\n"
               "  --config FILE       YAML config (default: the built-in synthetic dataset)\n"
               "  --set key=value     override one key, e.g. --set split.window=10 (repeatable)\n"
               "  --skip-bad-lines N  tolerate up to N malformed input lines, listing them\n"
               "                      (same as --set data.skip_bad_lines=N)\n"
               "  --print-config      print the resolved config and exit\n"
               "  --help-config       print every config key (Markdown table) and exit\n"
               "Writes <out_dir>/dataset.h5 and <out_dir>/stats.json; keys: README.md, Configuration.\n");
}

int main(int argc, char **argv)
{
    peso_conf c;
    peso_err err;
    int status;
    /* --skip-bad-lines is sugar for a --set, so it goes through the same checks */
    char **args = calloc((size_t)argc + 1, sizeof *args);
    char setbuf[64];
    int n = 0;
    for (int i = 0; i < argc; i++) {
        if (!strcmp(argv[i], "--skip-bad-lines")) {
            if (i + 1 >= argc) {
                fprintf(stderr, "peso-prep: --skip-bad-lines needs a number\n");
                return 2;
            }
            snprintf(setbuf, sizeof setbuf, "data.skip_bad_lines=%s", argv[++i]);
            args[n++] = "--set";
            args[n++] = setbuf;
            continue;
        }
        args[n++] = argv[i];
    }
    int done = peso_conf_cli(&c, n, args, "peso-prep", usage, &status);
    free(args);
    if (done)
        return status;
    if (peso_prep_run(&c, stdout, NULL, &err)) {
        fprintf(stderr, "peso-prep: %s\n", err.msg);
        return 1;
    }
    return 0;
}
