/*
 * The C surface bulkhead uses from DPDK: the public headers, plus `bh_*` wrappers for
 * what DPDK only offers as `static inline` functions or thread-local variables (which
 * bindgen cannot bind). Bindings are generated from this header; shim.c holds the
 * wrapper bodies and is compiled with DPDK's own cflags.
 */
#ifndef BULKHEAD_DPDK_SHIM_H
#define BULKHEAD_DPDK_SHIM_H

#include <stdint.h>
#include <rte_config.h>
#include <rte_eal.h>
#include <rte_dev.h>
#include <rte_errno.h>
#include <rte_lcore.h>
#include <rte_launch.h>
#include <rte_ethdev.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_ring.h>
#include <rte_eth_ring.h>
#include <rte_cycles.h>
#include <rte_version.h>

/* rte_errno is a per-lcore (thread-local) variable. */
int bh_rte_errno(void);

/* Hot path: burst rx/tx on one queue. */
uint16_t bh_eth_rx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **rx_pkts,
                         uint16_t nb_pkts);
uint16_t bh_eth_tx_burst(uint16_t port_id, uint16_t queue_id, struct rte_mbuf **tx_pkts,
                         uint16_t nb_pkts);

/* Mbuf helpers. */
struct rte_mbuf *bh_pktmbuf_alloc(struct rte_mempool *mp);
void bh_pktmbuf_free(struct rte_mbuf *m);
uint8_t *bh_pktmbuf_append(struct rte_mbuf *m, uint16_t len);

/* Lcores and time. */
unsigned bh_lcore_id(void);
uint64_t bh_get_tsc_cycles(void);
uint64_t bh_get_tsc_hz(void);
const char *bh_version(void);

#endif
