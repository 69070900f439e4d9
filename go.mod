module github.com/sysupdate/sysupdate

go 1.26.8

require (
	github.com/ProtonMail/go-crypto v1.5.2
	github.com/diskfs/go-diskfs v1.9.4
	github.com/godbus/dbus/v5 v5.2.4
	github.com/klauspost/compress v1.20.3
	github.com/pierrec/lz4/v4 v4.1.33
	golang.org/x/sys v0.49.0
)

require (
	github.com/cloudflare/circl v1.6.3 // indirect
	github.com/google/uuid v1.6.0 // indirect
	golang.org/x/crypto v0.45.0 // indirect
)
