module github.com/startdeliver/segment-destination/deliver

go 1.26.0

require github.com/startdeliver/segment-destination/shared v0.0.0

require (
	github.com/google/uuid v1.6.0 // indirect
	github.com/segmentio/analytics-go/v3 v3.3.0 // indirect
	github.com/segmentio/backo-go v1.0.0 // indirect
)

replace github.com/startdeliver/segment-destination/shared => ../shared
