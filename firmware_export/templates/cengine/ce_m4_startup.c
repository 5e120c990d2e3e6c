/* ce_m4_startup.c - minimal Cortex-M4 runtime for the generated engine's test/benchmark firmware.
 *
 * Vector table, reset handler (FPU enable via CPACR, .data copy, .bss clear, stack painting, C++ constructors),
 * semihosting output, host files and exit (BKPT 0xAB) and a 64-bit timer:
 *   default        SysTick (reload 0xFFFFFF, counts wraps); under `qemu-system-arm -icount shift=0` one tick
 *                  is 40 instructions;
 *   CE_USE_DWT     DWT->CYCCNT cycle counter (real boards; reads 0 under QEMU).
 * Runs on `qemu-system-arm -M mps2-an386` (see mps2_an386.ld) and on any Cortex-M4F with a debugger attached
 * for semihosting.
 */
#include <stdint.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
extern void (*__init_array_start[])(void);
extern void (*__init_array_end[])(void);
int main(void);

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)
#define SYST_CSR (*(volatile uint32_t *)0xE000E010u)
#define SYST_RVR (*(volatile uint32_t *)0xE000E014u)
#define SYST_CVR (*(volatile uint32_t *)0xE000E018u)
#define DEMCR (*(volatile uint32_t *)0xE000EDFCu)
#define DWT_CTRL (*(volatile uint32_t *)0xE0001000u)
#define DWT_CYCCNT (*(volatile uint32_t *)0xE0001004u)
#define CE_STACK_PAINT 0xA5A5A5A5u

static int ce_semihost(int op, const void *arg)
{
    register int r0 __asm__("r0") = op;
    register const void *r1 __asm__("r1") = arg;
    __asm__ volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void ce_puts(const char *s) { (void)ce_semihost(0x04, s); /* SYS_WRITE0 */ }

/* Host files over semihosting (test firmware only): SYS_OPEN mode 4 = "wb", 0 = "rb"; -1 on failure. */
int ce_file_open(const char *path, int write)
{
    uint32_t args[3];
    args[0] = (uint32_t)(uintptr_t)path;
    args[1] = write ? 4u : 0u;
    args[2] = (uint32_t)strlen(path);
    return ce_semihost(0x01, args);
}

/* SYS_WRITE: 0 when every byte was written. */
int ce_file_write(int fd, const void *data, uint32_t bytes)
{
    uint32_t args[3];
    args[0] = (uint32_t)fd;
    args[1] = (uint32_t)(uintptr_t)data;
    args[2] = bytes;
    return ce_semihost(0x05, args);
}

int ce_file_close(int fd)
{
    uint32_t arg = (uint32_t)fd;
    return ce_semihost(0x02, &arg);
}

static void ce_exit(int code)
{
    /* SYS_EXIT with ADP_Stopped_ApplicationExit (0x20026) or ADP_Stopped_RunTimeErrorUnknown (0x20023) */
    (void)ce_semihost(0x18, (const void *)(uintptr_t)(code == 0 ? 0x20026u : 0x20023u));
    for (;;) {
    }
}

/* C++ function-local statics with destructors register them with __cxa_atexit against this handle (crtbegin
 * provides it in hosted builds; this firmware links with -nostartfiles). Never exits, so they never run. */
void *__dso_handle = 0;

/* exit() / abort() (e.g. a TFLM assertion) end the emulation with an error instead of newlib's endless loop */
void _exit(int code)
{
    if (code != 0) {
        ce_puts("CE_FAULT exit\n");
    }
    ce_exit(code);
}

static volatile uint32_t ce_wraps;

void SysTick_Handler(void) { ce_wraps++; }

void ce_timer_start(void)
{
#if defined(CE_USE_DWT)
    DEMCR |= (1u << 24);
    DWT_CYCCNT = 0;
    DWT_CTRL |= 1u;
#else
    SYST_CSR = 0;
    SYST_RVR = 0x00FFFFFFu;
    SYST_CVR = 0;
    ce_wraps = 0;
    SYST_CSR = 7u; /* processor clock, interrupt, enable */
    while (SYST_CVR == 0u) {
        /* wait for the first reload so that the first reading is consistent */
    }
#endif
}

uint64_t ce_timer_now(void)
{
#if defined(CE_USE_DWT)
    return (uint64_t)DWT_CYCCNT;
#else
    uint32_t w1, w2, v;
    do {
        w1 = ce_wraps;
        v = SYST_CVR;
        w2 = ce_wraps;
    } while (w1 != w2);
    return (uint64_t)w1 * 0x01000000u + (uint64_t)(0x00FFFFFFu - v);
#endif
}

uint32_t ce_stack_used(void)
{
    const uint32_t *p = &_ebss;
    while (p < &_estack && *p == CE_STACK_PAINT) {
        ++p;
    }
    return (uint32_t)((uintptr_t)&_estack - (uintptr_t)p);
}

void Reset_Handler(void)
{
    uint32_t *dst;
    const uint32_t *src;
    uint32_t *sp;
    SCB_CPACR |= (0xFu << 20); /* CP10/CP11 full access: enable the FPU */
    __asm__ volatile("dsb\n isb" ::: "memory");
    for (src = &_sidata, dst = &_sdata; dst < &_edata;) {
        *dst++ = *src++;
    }
    for (dst = &_sbss; dst < &_ebss;) {
        *dst++ = 0;
    }
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (dst = &_ebss; dst < sp - 16;) {
        *dst++ = CE_STACK_PAINT;
    }
    for (void (**ctor)(void) = __init_array_start; ctor < __init_array_end; ++ctor) {
        (*ctor)(); /* C++ static constructors (none in the C engine) */
    }
    ce_exit(main());
}

void ce_fault_handler(void)
{
    ce_puts("CE_FAULT\n");
    ce_exit(2);
}

__attribute__((section(".vectors"), used)) static const void *const ce_vectors[16] = {
    &_estack, (const void *)Reset_Handler, (const void *)ce_fault_handler, (const void *)ce_fault_handler,
    (const void *)ce_fault_handler, (const void *)ce_fault_handler, (const void *)ce_fault_handler, 0, 0, 0, 0,
    (const void *)ce_fault_handler, (const void *)ce_fault_handler, 0, (const void *)ce_fault_handler,
    (const void *)SysTick_Handler,
};
