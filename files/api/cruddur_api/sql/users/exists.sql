-- Whether a user has this handle (a user's feed of no activities is still a feed).
SELECT EXISTS (SELECT 1 FROM public.users WHERE users.handle = %(handle)s)
