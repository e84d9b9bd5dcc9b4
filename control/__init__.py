"""The control plane: topology -> node configs + supervisord programs -> running network.

A pipeline in the manner of honcho: load and validate the topology (topology.py), expand it
into process specs and render files from templates without touching the disk (render.py),
write them, then drive supervisord over XML-RPC (supervisor.py) and wait for health
(health.py). It knows no Flask and no gRPC servicer.
"""
