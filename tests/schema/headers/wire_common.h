/* Included by wire_kinds.h: its types are this file's, not wire_kinds.h's. */
#ifndef WIRE_COMMON_H
#define WIRE_COMMON_H
struct common_hdr {
	__u16 version;
	__u16 flags;
};
#endif
