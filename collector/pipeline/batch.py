"""`processors.batch`: how the store's writer groups requests into one commit.

The Collector's batch processor buffers in front of the exporters; in otelite the group commit of the
single writer is that buffer (collector/store/writer.py reads this config), so acknowledgement can wait
for the commit that holds the request.
"""

from __future__ import annotations

from dataclasses import dataclass

from otelite.collector.component import Factory, InvalidField, duration


@dataclass
class BatchProcessorConfig:
    # The writer commits when this many items are pending or `timeout` passed since the first one
    # arrived, whichever comes first. Acknowledgement waits for that commit.
    send_batch_size: int = 8192
    send_batch_max_size: int = 0  # 0: 4 x send_batch_size per commit
    timeout: float = duration(0.0)  # to wait for send_batch_size items; clients wait for the commit

    def validate(self) -> None:
        if self.send_batch_size <= 0:
            raise InvalidField("send_batch_size", f"must be positive, got {self.send_batch_size}")


FACTORY = Factory(kind="processors", type="batch", config=BatchProcessorConfig)
