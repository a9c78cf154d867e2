/* The split's items as prep hands them to semid: ids and texts follow
 * the dataset item order through split.item_raw, not the raw order. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "prep/prep.h"

Test(prep, semid_items_follow_the_dataset_order)
{
    static const char *const ids[3] = {"B0001", "B0002", "B0003"};
    static const int32_t first[3] = {1, 2, 2};
    peso_raw raw;
    peso_raw_init(&raw);
    /* an item the protocol dropped comes first, the kept ones reversed */
    peso_raw_add(&raw, "u", 1, "dropped", 7, 0);
    for (int k = 2; k >= 0; k--)
        peso_raw_add(&raw, "u", 1, ids[k], strlen(ids[k]), 3 - k);
    peso_raw_add_text(&raw, 0, "dropped text", 12, 100);
    peso_raw_add_text(&raw, peso_strtab_find(raw.items, "B0002", 5), "a title", 7, 100);
    int32_t item_raw[3];
    for (int i = 0; i < 3; i++)
        item_raw[i] = peso_strtab_find(raw.items, ids[i], strlen(ids[i]));
    cr_assert_eq(item_raw[0], 3, "raw and dataset indices differ");
    peso_split split = {0};
    split.n_items = 3;
    split.item_raw = item_raw;
    split.item_first_block = (int32_t *)first;

    peso_semid_items it;
    peso_prep_semid_items(&it, &raw, &split);
    cr_assert_eq(it.n, 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(it.id[i], ids[i]);
        cr_assert_eq(it.first_block[i], first[i]);
    }
    cr_assert_null(it.text[0]);
    cr_assert_eq(it.text_len[0], 0);
    cr_assert_eq(it.text_len[1], 7);
    cr_assert_eq(memcmp(it.text[1], "a title", 7), 0);
    cr_assert_null(it.text[2]);
    peso_prep_semid_items_free(&it);
    cr_assert_null(it.id);
    peso_raw_free(&raw);
}
