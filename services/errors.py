"""Errors the services raise for bad user input; the CLI prints them as one line, the UI shows them."""


class UserError(Exception):
    """Bad input from the user: the message says what is wrong and nothing was changed."""
