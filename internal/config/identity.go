package config

import (
	"fmt"
	"os/user"
	"strconv"
)

// LookupUser finds the user a `user` key or --user flag names: a user name
// from the user database, or a numeric uid (which needs no entry there).
func LookupUser(name string) (*user.User, error) {
	u, err := user.Lookup(name)
	if err == nil {
		return u, nil
	}
	if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		if u, err := user.LookupId(name); err == nil {
			return u, nil
		}
		// A bare uid without a passwd entry: its primary group is unknown,
		// so `group` must say it (Validate does not know; Identity does).
		return &user.User{Uid: name, Username: name}, nil
	}
	return nil, fmt.Errorf("unknown user %q", name)
}

// LookupGroup finds the group a `group` key or --group flag names: a group
// name from the group database, or a numeric gid.
func LookupGroup(name string) (*user.Group, error) {
	g, err := user.LookupGroup(name)
	if err == nil {
		return g, nil
	}
	if _, nerr := strconv.ParseUint(name, 10, 32); nerr == nil {
		if g, err := user.LookupGroupId(name); err == nil {
			return g, nil
		}
		return &user.Group{Gid: name, Name: name}, nil
	}
	return nil, fmt.Errorf("unknown group %q", name)
}

// Identity is the user and groups Portico switches to (see Config.User).
type Identity struct {
	// User is the user name (or uid) for logs; "" when only the group
	// changes.
	User string
	// UID is -1 when only the group changes.
	UID, GID int
	// Groups are the supplementary groups.
	Groups []int
}

// Identity resolves User and Group; nil when neither is set.
func (c *Config) Identity() (*Identity, error) {
	if c.User == "" && c.Group == "" {
		return nil, nil
	}
	id := &Identity{UID: -1, GID: -1}
	var u *user.User
	if c.User != "" {
		var err error
		if u, err = LookupUser(c.User); err != nil {
			return nil, c.errorAt("user", "%v", err)
		}
		id.User = c.User
		id.UID, _ = strconv.Atoi(u.Uid)
	}
	if c.Group != "" {
		g, err := LookupGroup(c.Group)
		if err != nil {
			return nil, c.errorAt("group", "%v", err)
		}
		id.GID, _ = strconv.Atoi(g.Gid)
	} else {
		if u.Gid == "" {
			return nil, c.errorAt("user", "uid %s has no entry in the user database: set group too", c.User)
		}
		id.GID, _ = strconv.Atoi(u.Gid)
	}
	id.Groups = []int{id.GID}
	if u != nil && u.Gid != "" && (c.Group == "" || u.Gid == strconv.Itoa(id.GID)) {
		// The user's own groups, as login(1) would give them (initgroups).
		if gids, err := u.GroupIds(); err == nil {
			id.Groups = id.Groups[:0]
			for _, s := range gids {
				if n, err := strconv.Atoi(s); err == nil {
					id.Groups = append(id.Groups, n)
				}
			}
		}
	}
	return id, nil
}
