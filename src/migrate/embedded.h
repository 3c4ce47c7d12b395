/* The migration files built into the library (scripts/embed-sql writes
 * $(BUILD)/gen/migrations.c from the files in sql/ at build time). */
#ifndef DS_MIGRATE_EMBEDDED_H
#define DS_MIGRATE_EMBEDDED_H

#include <stddef.h>

typedef struct ds__embedded_file {
    const char *name;           /* "0001_platform_schema.up.sql" */
    const unsigned char *data;  /* the file's bytes, NUL-terminated */
    size_t len;                 /* without the terminating NUL */
} ds__embedded_file;

/* In file-name order; ends with an all-zero entry. */
extern const ds__embedded_file ds__embedded_files[];
extern const size_t ds__embedded_file_count;

#endif
