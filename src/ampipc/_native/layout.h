/*
 * The shared-memory layout of a ring (a FreeRTOS stream or message buffer) as the C core reads it.
 * The one description on the Python side is ampipc/_layout.py; the test suite checks that both agree.
 * Who writes which word is said in ring.c's theory of operation.
 */
#ifndef AMPIPC_NATIVE_LAYOUT_H
#define AMPIPC_NATIVE_LAYOUT_H

#define RING_MAGIC 0x42534D41u /* "AMSB" little-endian */
#define OFF_MAGIC 0
#define OFF_FLAGS 4
#define OFF_LENGTH 8
#define OFF_DATA 12
#define OFF_TRIGGER 16
#define OFF_PREFIX 20
#define OFF_TOTAL 24
/* writer cache line */
#define OFF_HEAD 64
#define OFF_WRITER_CPU 68 /* u32: 1 + the CPU the writer last waited on (0: not known yet) */
#define OFF_TX_WAITING 192 /* line 3: written only around a sleep */
#define OFF_WRITER_PID 72
#define OFF_WRITER_START 80
#define OFF_MSGS_IN 88
#define OFF_BYTES_IN 96
#define OFF_PEAK 104
#define OFF_TX_BLOCKS 112
#define OFF_WAKES_BY_WRITER 120
/* reader cache line */
#define OFF_TAIL 128
#define OFF_READER_CPU 132 /* u32: 1 + the CPU the reader last waited on (0: not known yet) */
#define OFF_RX_WAITING 196
/* line 3 also holds the close flags: each stored only by its own side's close() and cleared by
 * that role's next operation (a new writer or reader takes the role over) */
#define OFF_WRITER_CLOSED 200
#define OFF_READER_CLOSED 204
#define OFF_ATTACHERS 208 /* u64: region process slots that attached the buffer (kept by ampipc/region.py) */
#define OFF_READER_PID 136
#define OFF_READER_START 144
#define OFF_MSGS_OUT 152
#define OFF_BYTES_OUT 160
#define OFF_RX_BLOCKS 168
#define OFF_WAKES_BY_READER 176
#define RING_HEADER_SIZE 256

/* flags, as FreeRTOS's ucFlags where they exist: message, static, batching; then ampipc's strict mode */
#define FLAG_MESSAGE 1u
#define FLAG_STATIC 2u
#define FLAG_BATCHING 4u
#define FLAG_STRICT 8u /* refuse zero-length messages, which a FreeRTOS reader cannot consume */
#define PREFIX_SIZE 4u /* the default length-prefix width: sizeof(size_t) on a 32-bit MCU */

#endif
