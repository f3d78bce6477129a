// Debian 13's static glslang/SPIRV-Tools were compiled against glibc 2.38, whose <stdlib.h> maps
// strtol & co. to the C23 entry points (which also accept "0b" prefixes). Debian 12's glibc 2.36
// lacks them; the shader compiler never parses binary literals through them, so the classic
// functions serve.
#include <stdlib.h>
long __isoc23_strtol(const char *s, char **e, int b) { return strtol(s, e, b); }
long long __isoc23_strtoll(const char *s, char **e, int b) { return strtoll(s, e, b); }
unsigned long __isoc23_strtoul(const char *s, char **e, int b) { return strtoul(s, e, b); }
unsigned long long __isoc23_strtoull(const char *s, char **e, int b) { return strtoull(s, e, b); }
