"""illumos kernel reports on the serial console: the illumos ReportTable.

Every format below is quoted from the illumos gate (illumos-gate at
bb93684319, usr/src/uts/...); the lines the console shows are those formats
with the kernel's values filled in:

    panic[cpu0]/thread=fffffe00040c5c20: BAD TRAP: type=e (#pf Page fault)
      rp=fffffe00040c5970 addr=0 occurred in module "mmap_umem" due to a NULL
      pointer dereference                                  (one line)

    sched: #pf Page fault                                  showregs()
    Bad kernel fault at addr=0x0
    pid=0, pc=0xfffffffff7a0c0d1, sp=0xfffffe00040c5a68, eflags=0x10246
    ...
    fffffe00040c5aa0 mmap_umem:umem_mmap+31 ()             traceback()
    ...
    dumping to /dev/zvol/dsk/rpool/dump, offset 65536, content: kernel

A panic is printed by vpanic_common() (common/os/panic.c: "\n\rpanic[cpu%d]/
thread=%p: " then the message); the message of a trap the kernel cannot
handle comes from die() (i86pc/os/trap.c: "BAD TRAP: type=%x (#%s %s) rp=%p
addr=%p" and, for a page fault below kernelbase, " occurred in module \"%s\"
due to %s"). kmem's debugging (kmem_flags) reports corruption with
kmem_error() (common/os/kmem.c: "kernel memory allocator: " then what it
found) before it panics with "kernel heap corruption detected". After the
registers (showregs(), dumpregs()) and the stack (intel/os/archdep.c:
"%016lx %s:%s+%lx (%s)"), the kernel dumps (common/os/dumpsubr.c: "dumping
to %s, offset %lld, content: %s", or "skipping system dump - no dump device
configured"), says "dump aborted: please record the above information!"
(panic.c) when it cannot, and resets with "rebooting..." (i86pc/os/
machdep.c); any of these ends the report. QEMU runs with -no-reboot, so the
reset ends QEMU too.

Not here: cmn_err(CE_WARN) prints one line, "WARNING: ...", with no end
marker, and boots print benign ones; a report captured until an end marker
would swallow the console. Warnings belong to the per-driver check of the
kernel's message buffer instead.
"""

from __future__ import annotations

import re

from ..watcher import Pattern, ReportTable

# Order matters: the first match names the report. A panic from a trap is
# printed on one line that matches both; "bad-trap" is the more precise name.
PATTERNS = (
    # i86pc/os/trap.c die(): panic("BAD TRAP: type=%x (#%s %s) rp=%p addr=%p ...")
    Pattern("bad-trap", re.compile(r"BAD TRAP: type=[0-9a-f]+ "), True),
    # common/os/kmem.c kmem_error(): printf("kernel memory allocator: ") then
    # "buffer modified after being freed", "redzone violation: ...",
    # "duplicate free: ...", ...; the memory is corrupt whatever follows.
    Pattern("kmem", re.compile(r"kernel memory allocator: "), True),
    # common/os/panic.c vpanic_common(): printf("\n\rpanic[cpu%d]/thread=%p: ")
    Pattern("panic", re.compile(r"panic\[cpu\d+\]/thread=[0-9a-f]+: "), True),
)

# The lines after which a panic report has nothing more to say.
END = re.compile(r"^(dumping to \S+, offset \d+, content: "          # dumpsubr.c
                 r"|skipping system dump - no dump device configured"  # dumpsubr.c
                 r"|dump aborted: please record the above information!"  # panic.c
                 r"|rebooting\.\.\.)")                                  # machdep.c

TABLE = ReportTable(PATTERNS, END)
