"""The illumos kernel family.

On this Linux host, without an illumos machine (`mmap-harness illumos check`):
the gate's own build rules, kernel symbols and style (gate, makevars, cw,
flags, csyms, kernel_symbols, derived, check, userland, command).

In an OmniOS (or other illumos) guest booted from a disk image the user
supplies, module by module:

    keys.make_keys(dir)                       client and host key pairs for this run
    seed.write_seed_iso(path, SeedConfig...)  NoCloud seed: root's key, host key, sshd
    machine.machine_spec(definition, seed, accel) -> qemu.Machine
    watcher.Watcher(console, patterns.TABLE)  panic[cpu / BAD TRAP / kmem reports
    console_login.wait_ready(...)             the seed's ready line, or the login prompt
    console_login.login_and_install(...)      fallback: keys typed on the serial console
    ssh.GuestSSH.wait(...)                    pinned host key, as for Linux guests
    steps.*                                   build with the guest's gcc, add_drv,
                                              workloads, rem_drv, kernel log
    family.ILLUMOS                            all of it behind harness.family's interface

The guest half has not run against a real illumos kernel in this project's
CI: no illumos image can be had there. See README.md, "illumos guests".
"""
