"""The `sqlite` exporter: the pipelines' consumer that stores batches through the store's single writer
(collector/store/), and whose commit is what an acknowledgement promises."""
