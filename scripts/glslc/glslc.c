// A minimal GLSL -> SPIR-V compiler over shaderc's C API, for the shaders whose extensions
// (GL_KHR_cooperative_matrix) are newer than the glslang vulkano-shaders links. Built by
// scripts/setup.sh against Debian 13's static shaderc/glslang; used by scripts/spirv.sh.
//
//   glslc IN.comp OUT.spv [NAME=VALUE ...]
//
// Target: Vulkan 1.3, optimised for performance. `#include "x"` resolves next to IN.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <shaderc/shaderc.h>

static char *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = malloc((size_t)n + 1);
    if (!s || fread(s, 1, (size_t)n, f) != (size_t)n) { fclose(f); free(s); return NULL; }
    fclose(f);
    s[n] = 0;
    *len = (size_t)n;
    return s;
}

static shaderc_include_result *include(void *dir, const char *name, int type, const char *from, size_t depth) {
    (void)type; (void)from; (void)depth;
    shaderc_include_result *r = calloc(1, sizeof *r);
    size_t need = strlen(dir) + strlen(name) + 2;
    char *path = malloc(need);
    snprintf(path, need, "%s/%s", (const char *)dir, name);
    size_t len = 0;
    char *text = slurp(path, &len);
    if (text) {
        r->source_name = path; r->source_name_length = strlen(path);
        r->content = text; r->content_length = len;
    } else {
        free(path);
        r->source_name = ""; r->content = "include not found"; r->content_length = 17;
    }
    return r;
}

static void release(void *dir, shaderc_include_result *r) {
    (void)dir;
    if (r->source_name_length) { free((void *)r->source_name); free((void *)r->content); }
    free(r);
}

int main(int argc, char **argv) {
    if (argc < 3) { fprintf(stderr, "usage: glslc IN.comp OUT.spv [NAME=VALUE ...]\n"); return 2; }
    size_t len = 0;
    char *src = slurp(argv[1], &len);
    if (!src) { fprintf(stderr, "glslc: cannot read %s\n", argv[1]); return 1; }
    char *dir = strdup(argv[1]);
    char *slash = strrchr(dir, '/');
    if (slash) *slash = 0; else strcpy(dir, ".");
    shaderc_compiler_t c = shaderc_compiler_initialize();
    shaderc_compile_options_t o = shaderc_compile_options_initialize();
    shaderc_compile_options_set_target_env(o, shaderc_target_env_vulkan, shaderc_env_version_vulkan_1_3);
    shaderc_compile_options_set_optimization_level(o, shaderc_optimization_level_performance);
    shaderc_compile_options_set_include_callbacks(o, include, release, dir);
    for (int i = 3; i < argc; i++) {
        char *eq = strchr(argv[i], '=');
        if (eq) shaderc_compile_options_add_macro_definition(o, argv[i], (size_t)(eq - argv[i]), eq + 1, strlen(eq + 1));
        else shaderc_compile_options_add_macro_definition(o, argv[i], strlen(argv[i]), "1", 1);
    }
    shaderc_compilation_result_t r = shaderc_compile_into_spv(c, src, len, shaderc_compute_shader, argv[1], "main", o);
    if (shaderc_result_get_compilation_status(r) != shaderc_compilation_status_success) {
        fprintf(stderr, "%s", shaderc_result_get_error_message(r));
        return 1;
    }
    FILE *out = fopen(argv[2], "wb");
    size_t n = shaderc_result_get_length(r);
    if (!out || fwrite(shaderc_result_get_bytes(r), 1, n, out) != n || fclose(out) != 0) {
        fprintf(stderr, "glslc: cannot write %s\n", argv[2]);
        return 1;
    }
    return 0;
}
