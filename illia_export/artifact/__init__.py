"""The artifact contract, shared by exporters and runtimes: the manifest schema and where it is
embedded (:mod:`.manifest`), the integrity digest (:mod:`.digest`), what the caller trusts
(:mod:`.trust`: which artifacts may load, and which may run code) and atomic writes (:mod:`.atomic`).

Dependency direction: ``exporters -> runtime -> artifact``; ``cli``, ``serve`` and ``scale`` import
``artifact`` directly. Nothing here imports the exporters or the runtime.
"""
