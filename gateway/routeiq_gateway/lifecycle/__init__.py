"""The process's life: start-up, SIGHUP reload, SIGTERM drain."""
