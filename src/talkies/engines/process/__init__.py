"""External process engines (llama-swap style): `engine` (the executor), `child` (one server process and
its watchdog), `command` (argv, runtime macros, ports)."""
