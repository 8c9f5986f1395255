module github.com/natter/natter/presence

go 1.26.0

replace github.com/natter/natter/services => ../services
