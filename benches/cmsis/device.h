/* The few device definitions CMSIS Core's core_cm4.h asks of a device header, for QEMU's
 * mps2-an386 (Cortex-M4F). Only SysTick and the FPU's CPACR are used. */
#ifndef SPARKLE_CMSIS_BENCH_DEVICE_H
#define SPARKLE_CMSIS_BENCH_DEVICE_H

typedef enum IRQn
{
    NonMaskableInt_IRQn = -14,
    HardFault_IRQn = -13,
    MemoryManagement_IRQn = -12,
    BusFault_IRQn = -11,
    UsageFault_IRQn = -10,
    SVCall_IRQn = -5,
    DebugMonitor_IRQn = -4,
    PendSV_IRQn = -2,
    SysTick_IRQn = -1,
} IRQn_Type;

#define __CM4_REV 0x0001U
#define __MPU_PRESENT 1U
#define __VTOR_PRESENT 1U
#define __NVIC_PRIO_BITS 3U
#define __Vendor_SysTickConfig 0U
#define __FPU_PRESENT 1U

#include "core_cm4.h"

#endif
