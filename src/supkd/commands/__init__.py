"""One module per `supkd` subcommand (see supkd.cli.COMMANDS)."""
