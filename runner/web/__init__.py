"""`scriptorium serve`: a small local web page over the catalog (search, read along, backlog).

Starlette + Jinja templates + a little vanilla JS; no front-end build step. Nothing from a
request is used as a filesystem path: media are found only through their catalog id.
"""
