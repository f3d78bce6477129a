/* ARM semihosting (bkpt 0xab): SYS_WRITE0 for output, angel SYS_EXIT for the exit status. */
#ifndef SPARKLE_CMSIS_BENCH_SEMIHOST_H
#define SPARKLE_CMSIS_BENCH_SEMIHOST_H

#include <stdint.h>

#define SYS_WRITE0 0x04
#define SYS_EXIT 0x18
#define ADP_Stopped_ApplicationExit 0x20026
#define ADP_Stopped_RunTimeErrorUnknown 0x20023

static inline uint32_t semihost_call(uint32_t op, const void *arg)
{
    register uint32_t r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

static inline void semihost_write0(const char *s) { semihost_call(SYS_WRITE0, s); }

/* QEMU exits 0 for ADP_Stopped_ApplicationExit and 1 for any other reason. */
__attribute__((noreturn)) static inline void semihost_exit(int success)
{
    semihost_call(SYS_EXIT,
                  (const void *)(uintptr_t)(success ? ADP_Stopped_ApplicationExit : ADP_Stopped_RunTimeErrorUnknown));
    for (;;)
    {
    }
}

#endif
