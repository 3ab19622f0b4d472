/*
 * The SIGBUS guard (part of the C core; module.c includes it).
 *
 * Theory of operation
 * -------------------
 * Any process that can open a segment can ftruncate it smaller; the next access of every process
 * that maps it beyond the new end faults with SIGBUS. The handler below looks the faulting address
 * up among this process's mappings; if it is one of them, it replaces the pages from the fault to
 * the end of that mapping with private zero pages (the access then completes harmlessly) and marks
 * the mapping faulted. Every native call checks that mark on entry and on exit and raises
 * CorruptRegion, so the interpreter survives and the caller learns the segment was shrunk. A fault
 * outside our mappings goes to the handler that was installed before (or the default action).
 * The table is read by the handler without locks: slots are claimed with a CAS, their fields
 * published with release stores, and a slot is freed only after its munmap. */
#define GUARD_SLOTS 1024
typedef struct {
    uintptr_t base; /* 0: free */
    size_t size;
    int faulted;
} guard_slot;
static guard_slot guard_table[GUARD_SLOTS];
static struct sigaction previous_sigbus;
static long page_size = 4096;

static int guard_register(unsigned char *base, size_t size) {
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t expected = 0;
        if (__atomic_load_n(&guard_table[i].base, __ATOMIC_RELAXED) != 0) continue;
        /* claim with a sentinel, fill in, then publish the real base */
        if (!__atomic_compare_exchange_n(&guard_table[i].base, &expected, (uintptr_t)1, 0, __ATOMIC_ACQ_REL,
                                         __ATOMIC_RELAXED))
            continue;
        __atomic_store_n(&guard_table[i].size, size, __ATOMIC_RELAXED);
        __atomic_store_n(&guard_table[i].faulted, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&guard_table[i].base, (uintptr_t)base, __ATOMIC_RELEASE);
        return i + 1;
    }
    return 0; /* more than GUARD_SLOTS live mappings: this one is unguarded */
}

/* `slot` is the index + 1 that guard_register returned; 0 means none. */
static void guard_unregister(int slot) {
    if (slot > 0) __atomic_store_n(&guard_table[slot - 1].base, (uintptr_t)0, __ATOMIC_RELEASE);
}

static void sigbus_handler(int sig, siginfo_t *info, void *context) {
    uintptr_t addr = (uintptr_t)info->si_addr;
    for (int i = 0; i < GUARD_SLOTS; i++) {
        uintptr_t base = __atomic_load_n(&guard_table[i].base, __ATOMIC_ACQUIRE);
        if (base <= 1) continue;
        size_t size = __atomic_load_n(&guard_table[i].size, __ATOMIC_RELAXED);
        if (addr < base || addr >= base + size) continue;
        uintptr_t page = addr & ~((uintptr_t)page_size - 1);
        /* the raw system call: async-signal-safe, unlike some libc wrappers */
        long p = syscall(SYS_mmap, (void *)page, (size_t)(base + size - page), PROT_READ | PROT_WRITE,
                         MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (p != -1) {
            __atomic_store_n(&guard_table[i].faulted, 1, __ATOMIC_RELEASE);
            return; /* the access is retried on the zero pages */
        }
        break;
    }
    /* Not ours: let the handler that was there before see the retried access (faulthandler prints
     * its traceback); if the same fault comes back to us, the default action ends the process. */
    static uintptr_t last_foreign_fault = 0;
    if (addr != last_foreign_fault && previous_sigbus.sa_handler != SIG_DFL && previous_sigbus.sa_handler != SIG_IGN) {
        last_foreign_fault = addr;
        sigaction(SIGBUS, &previous_sigbus, NULL);
        return;
    }
    signal(SIGBUS, SIG_DFL);
}

/* Installed at import and checked again whenever a mapping is made: a handler installed after ours
 * (faulthandler, for one, which pytest enables) would otherwise see our faults first and end the
 * process. Ours goes back in front and passes on every fault that is not ours. */
static void guard_install(void) {
    struct sigaction current;
    if (sigaction(SIGBUS, NULL, &current) == 0 && (current.sa_flags & SA_SIGINFO) &&
        current.sa_sigaction == sigbus_handler)
        return;
    page_size = sysconf(_SC_PAGESIZE);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = sigbus_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, &previous_sigbus);
}
