"""`ssmp-infer review`: a trailer directory under an editor's eye (session.py), its page and API (server.py)."""
