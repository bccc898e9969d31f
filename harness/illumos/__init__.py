"""illumos on a Linux host: the gate's own build rules, kernel symbols and style
checked without an illumos machine (`mmap-harness illumos check`)."""
