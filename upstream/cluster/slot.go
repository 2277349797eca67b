package cluster

import (
	"strconv"
	"sync"
)

// Slots is the number of hash slots a Redis Cluster divides its keys into.
const Slots = 16384

// Slot is the hash slot of key, by Redis Cluster's rule: CRC16 (XMODEM) of the
// key modulo 16384, where a key holding a hash tag, a non-empty string between
// its first '{' and the first '}' after it, hashes that string alone.
func Slot(key []byte) int {
	for i, ch := range key {
		if ch != '{' {
			continue
		}
		for j := i + 1; j < len(key); j++ {
			if key[j] == '}' {
				if j > i+1 {
					key = key[i+1 : j]
				}
				return int(crc16(key) & (Slots - 1))
			}
		}
		break
	}
	return int(crc16(key) & (Slots - 1))
}

// crc16 is CRC-16/XMODEM (polynomial 0x1021, no reflection, initial 0), as
// Redis's crc16.c computes it.
func crc16(b []byte) uint16 {
	var crc uint16
	for _, ch := range b {
		crc = crc<<8 ^ crc16Table[byte(crc>>8)^ch]
	}
	return crc
}

var crc16Table = func() (t [256]uint16) {
	for i := range t {
		crc := uint16(i) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
		t[i] = crc
	}
	return t
}()

// SlotTag returns a hash tag, "{...}", that puts any key holding it in slot:
// the way to write a key on a chosen master (a canary on each one, say).
func SlotTag(slot int) string {
	tagsOnce.Do(func() {
		found := 0
		for i := 0; found < Slots; i++ {
			s := strconv.Itoa(i)
			if sl := int(crc16([]byte(s)) & (Slots - 1)); tags[sl] == "" {
				tags[sl] = "{" + s + "}"
				found++
			}
		}
	})
	return tags[slot]
}

var (
	tagsOnce sync.Once
	tags     [Slots]string
)
