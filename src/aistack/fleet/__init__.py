"""The model fleet: what every backend has (inventory), where a pull or delete goes
(placement), how a pull is measured (progress), and bringing each backend to the models
its config declares (sync). Used by the command line and by the gateway's admin routes.
"""
