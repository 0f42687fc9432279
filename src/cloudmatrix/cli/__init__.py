"""L8 command-line interface (Typer): the only code that prints, writes files or exits."""
