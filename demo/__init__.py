"""The demo: a believable machine builder, the ERPs it runs and its fleet.

The world generator draws the machine builder with planted churn and its truth, the fake ERP
servers follow the vendors' documented APIs, and the fleet simulator publishes over MQTT.

It feeds the platform only through its front doors: MQTT, the ERP APIs and files, and the
history bulk loader for a new database.
"""
