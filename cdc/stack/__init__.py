"""The local real stack: provisioning (cache), supervision (pids, logs, health), status.

    versions.py   every pinned version, in one place
    provision.py  Maven / pip downloads into the cache, atomic, verified by manifest
    process.py    one supervised OS process: start, health wait, stop, pid identity
    components.py what each component runs (argv, env, config files, health checks)
    manager.py    up / down / status over all components, in dependency order
"""
