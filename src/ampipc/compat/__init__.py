"""Firmware names for ported code: FreeRTOS buffers, ST's cm_ipc, the STM32 HAL (HSEM, EXTI, NVIC).

Each module is a thin, typed layer over the native ampipc API that keeps the C names, argument
order, return codes and ticks of the firmware it stands for, so that code ported from an
STM32H7 dual-core project reads like the original:

- `ampipc.compat.freertos`: ``xMessageBufferCreate``, ``xMessageBufferSend``, ``xStreamBuffer*``,
  the ``FromISR`` variants with ``pxHigherPriorityTaskWoken``, ``pdPASS``/``pdFAIL``, ticks
  (``configTICK_RATE_HZ``, ``portMAX_DELAY``, ``pdMS_TO_TICKS``).
- `ampipc.compat.cm_ipc`: ``ipc_init``, ``ipc_start``, ``ipc_sendmsg``/``ipc_recvmsg`` and the
  channel forms ``ipc_send``/``ipc_receive``, ``ipc_sendmsg_irq``.
- `ampipc.compat.hal`: ``HAL_HSEM_*``, ``HAL_EXTI_*``, ``HAL_NVIC_*``, the weak callbacks
  (``HAL_HSEM_FreeCallback``...), CMSIS ``__SEV``/``__WFE``.

The documentation's mapping table lists every name with the native one and the differences.
The modules are imported on use (``from ampipc.compat import freertos``).
"""

from __future__ import annotations

__all__: list[str] = []
