"""The control plane: topology -> node configs + supervisord programs -> running network.

A pipeline in the manner of honcho: load and validate the topology (topology.py), expand it
into process specs (each node's command lines: processes.py) and render the node configs and
supervisord.conf from the templates in supervisor/ without touching the disk (render.py),
write them, then drive supervisord over XML-RPC (supervisor.py) and wait for health
(health.py). It imports common/ only: no Flask app, no gRPC servicer, no client library.
"""
