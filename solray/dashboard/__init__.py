"""The dashboard: a web page on the head showing what the cluster is doing.

server.py is the process (HTTP, login, the JSON API), data.py what it shows
(one query per view), static/ the page itself (plain HTML, CSS and JS).
"""
