/* Bare-metal start for QEMU's mps2-an386: vector table, .data/.bss set-up, FPU on, main, then
 * semihosting exit (angel SYS_EXIT with ADP_Stopped_ApplicationExit on success). */
#include <stdint.h>

#include "device.h"
#include "semihost.h"

extern uint32_t __data_start, __data_end, __data_load, __bss_start, __bss_end, __stack_top;
extern int main(void);

void Reset_Handler(void);
void Fault_Handler(void);

__attribute__((section(".vector_table"), used)) static void (*const vectors[16])(void) = {
    (void (*)(void))(&__stack_top),
    Reset_Handler,
    Fault_Handler, /* NMI */
    Fault_Handler, /* HardFault */
    Fault_Handler, /* MemManage */
    Fault_Handler, /* BusFault */
    Fault_Handler, /* UsageFault */
    0, 0, 0, 0,
    Fault_Handler, /* SVCall */
    Fault_Handler, /* DebugMonitor */
    0,
    Fault_Handler, /* PendSV */
    Fault_Handler, /* SysTick (its interrupt is never enabled) */
};

void Reset_Handler(void)
{
    uint32_t *src = &__data_load;
    for (uint32_t *dst = &__data_start; dst < &__data_end;)
    {
        *dst++ = *src++;
    }
    for (uint32_t *dst = &__bss_start; dst < &__bss_end;)
    {
        *dst++ = 0;
    }
    /* CP10 and CP11 full access: the hard-float ABI uses the FPU's registers. */
    SCB->CPACR |= (0xFUL << 20);
    __DSB();
    __ISB();
    semihost_exit(main() == 0);
}

void Fault_Handler(void)
{
    semihost_write0("FAULT\n");
    semihost_exit(0);
}
