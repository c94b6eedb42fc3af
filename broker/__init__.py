"""The broker of a checkout: ``python -m broker --config FOLDER/embedded.json`` runs the embedded
broker. The code (Mosquitto configuration, credentials, ACLs, the embedded broker, starting one
locally) is in :mod:`privgrid.broker`; this folder is not installed."""
