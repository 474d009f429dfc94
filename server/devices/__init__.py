"""Device groups (named sets of devices matched from DeviceInfo) and the device action queue."""
