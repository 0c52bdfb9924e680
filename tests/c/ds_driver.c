/* SPDX-License-Identifier: MIT */
/*
 * A line-oriented driver for one instance, so that tests can check a
 * structure's semantics against a model written in Python.
 *
 *   ds_driver --list            the registry as JSON lines (id, name, flags...)
 *   ds_driver NAME CAPACITY     then, on stdin, one operation per line:
 *     i KEY VAL   insert       -> "RES"
 *     d KEY       delete       -> "RES VAL"
 *     s KEY       search       -> "RES VAL"
 *     p           pop          -> "RES KEY VAL"
 *     v           verify       -> "RES COUNT KEYSUM VALSUM"
 *     r LO HI     iterate      -> "RES N K1 V1 K2 V2 ..."
 *   RES is the enum ds_result number.
 */
#include "tcommon.h"

static void list_registry(void)
{
	ap_u32 i;

	for (i = 0; i < DS_TYPES_END; i++) {
		const struct ds_meta *m = ds_meta_of(i);

		if (!m)
			continue;
		printf("{\"id\": %u, \"name\": \"%s\", \"description\": \"%s\", \"progress\": \"%s\", "
		       "\"flags\": %u, \"model\": %u, \"ops\": %u, \"node_size\": %u, \"head_size\": %u}\n",
		       m->id, m->name, m->description, m->progress, m->flags, m->model, m->ops, m->node_size,
		       m->head_size);
	}
}

int main(int argc, char **argv)
{
	const struct ds_meta *m;
	struct ds_space *sp;
	struct ds_ctx c;
	struct ds_config cfg = {0};
	struct ds_kv *out;
	char line[256];
	ap_u64 d;
	int err;

	if (argc == 2 && !strcmp(argv[1], "--list")) {
		list_registry();
		return 0;
	}
	REQUIRE(argc == 3, "usage: ds_driver --list | NAME CAPACITY");
	m = ds_meta_by_name(argv[1]);
	REQUIRE(m, "no structure %s", argv[1]);
	cfg.capacity = strtoull(argv[2], NULL, 0);
	t_map_arena();
	sp = t_space(16, 100000, ARENA_HEAP_POISON);
	REQUIRE(ds_user_attach(sp, &c) == DS_OK, "attach");
	d = ds_create(sp, &c, m->id, &cfg, "driven", &err);
	REQUIRE(d, "create: %d", err);
	out = (struct ds_kv *)arena_heap_alloc(&sp->heap, 65536 * sizeof(struct ds_kv), 0);
	REQUIRE(out, "alloc");
	while (fgets(line, sizeof(line), stdin)) {
		unsigned long long a = 0, b = 0;
		ap_u64 k = 0, v = 0, n = 0, i;
		struct ds_verify vf;
		int r;

		switch (line[0]) {
		case 'i':
			sscanf(line + 1, "%llu %llu", &a, &b);
			ds_enter(&c);
			r = ds_apply(&c, m->id, d, DS_OP_INSERT, a, b, &k, &v);
			ds_exit(&c);
			printf("%d\n", r);
			break;
		case 'd':
		case 's':
			sscanf(line + 1, "%llu", &a);
			ds_enter(&c);
			r = ds_apply(&c, m->id, d, line[0] == 'd' ? DS_OP_DELETE : DS_OP_SEARCH, a, 0, &k, &v);
			ds_exit(&c);
			printf("%d %llu\n", r, (unsigned long long)v);
			break;
		case 'p':
			ds_enter(&c);
			r = ds_apply(&c, m->id, d, DS_OP_POP, 0, 0, &k, &v);
			ds_exit(&c);
			printf("%d %llu %llu\n", r, (unsigned long long)k, (unsigned long long)v);
			break;
		case 'v':
			r = ds_verify_type(&c, m->id, d, &vf);
			printf("%d %llu %llu %llu\n", r, (unsigned long long)vf.count, (unsigned long long)vf.keysum,
			       (unsigned long long)vf.valsum);
			break;
		case 'r':
			sscanf(line + 1, "%llu %llu", &a, &b);
			ds_enter(&c);
			r = ds_iterate_type(&c, m->id, d, a, b, out, 65536, &n);
			ds_exit(&c);
			printf("%d %llu", r, (unsigned long long)n);
			for (i = 0; i < n; i++)
				printf(" %llu %llu", (unsigned long long)out[i].key, (unsigned long long)out[i].val);
			printf("\n");
			break;
		default:
			continue;
		}
		fflush(stdout);
	}
	ds_user_detach(&c);
	return 0;
}
