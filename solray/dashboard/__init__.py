"""The dashboard: a web page on the head showing what the cluster is doing.

server.py runs it (where, and how it stays light), app.py is the web
application (login, pages, the JSON API), data.py what it shows (one query
per view), static/ the page itself (plain HTML, CSS and JS).
"""
