module github.com/natter/natter/auth

go 1.26.0

replace github.com/natter/natter/services => ../services
