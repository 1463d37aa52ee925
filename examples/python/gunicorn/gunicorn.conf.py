"""gunicorn settings for app.py: every worker opens the store after the
fork (never the master: a handle opened before fork() answers StoreForked
in the child). The first worker owns the store; the others attach.

    KEYWARD_DB=/var/lib/myapp/keys.db gunicorn -c gunicorn.conf.py -w 4 app:app
"""

preload_app = False


def post_fork(server, worker):
    import app

    app.open_store()


def worker_exit(server, worker):
    import app

    app.close_store()  # if this worker owned the store, another takes it over
